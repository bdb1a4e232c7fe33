# attack: 'a' * (10 ** 10) with the size computed at runtime
# expect: memory

def workflow(ctx):
    n = 10
    blob = "a" * (n ** n)
    return Plan(
        name="mem",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "echo " + blob[:10])],
    )
