# attack: import builtins and use builtins.open
# expect: import

import builtins


def workflow(ctx):
    leaked = builtins.open("/tmp/plue-attack-pwned", "w")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
