# attack: 5,000 steps generated in a loop (limit is 1,000)
# expect: limit

def workflow(ctx):
    steps = [Step.bash("s%d" % i, "echo %d" % i) for i in range(5000)]
    return Plan(
        name="many-steps",
        triggers=[Trigger.on_push(branch="main")],
        steps=steps,
    )
