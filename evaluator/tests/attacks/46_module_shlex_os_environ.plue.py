# attack: shlex.os.environ to read PLUE_ATTACK_CANARY from the environment
# expect: error

import shlex


def workflow(ctx):
    leaked = shlex.os.environ.get("PLUE_ATTACK_CANARY")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
