# attack: from os import system
# expect: import

from os import system


def workflow(ctx):
    leaked = system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
