# attack: import os and read PLUE_ATTACK_CANARY from os.environ
# expect: import

import os


def workflow(ctx):
    leaked = os.environ.get("PLUE_ATTACK_CANARY")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
