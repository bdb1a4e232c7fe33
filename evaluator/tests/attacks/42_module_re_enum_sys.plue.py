# attack: re.enum.sys.modules['os'] through the module re imports
# expect: error

import re


def workflow(ctx):
    leaked = re.enum.sys.modules["os"].system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
