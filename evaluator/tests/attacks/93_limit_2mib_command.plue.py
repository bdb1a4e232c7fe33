# attack: a single step with a 2 MiB command string (plan JSON over 1 MiB)
# expect: limit

def workflow(ctx):
    command = "echo " + "A" * (2 * 1024 * 1024)
    return Plan(
        name="big-command",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("big", command)],
    )
