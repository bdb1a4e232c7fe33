# attack: 1,000 steps of 100 dependencies each, every one with a loop_to that is not an ancestor, for a walk of the whole graph per step
# expect: limit

def workflow(ctx):
    return Plan(name="ci", steps=[
        Step.bash("s" + str(i), "true",
                  depends_on=["s" + str(j) for j in range(max(0, i - 100), i)],
                  loop_to="s" + str((i + 1) % 1000), max_loops=1)
        for i in range(1000)
    ])
