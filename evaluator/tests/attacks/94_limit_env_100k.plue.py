# attack: a step env dict with 100,000 entries (plan JSON over 1 MiB)
# expect: limit

def workflow(ctx):
    env = {"VAR_%06d" % i: "x" * 16 for i in range(100000)}
    return Plan(
        name="big-env",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("env", "env", env=env)],
    )
