# attack: import sys and fetch os from sys.modules
# expect: import

import sys


def workflow(ctx):
    leaked = sys.modules["os"].system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
