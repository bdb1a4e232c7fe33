# attack: use up most of the plan byte budget and fail, so a valid next file is "larger than 1 MiB"
def workflow(ctx):
    big = [Step.bash("s" + str(i), "x" * 1000) for i in range(1000)]
    raise ValueError("done")
