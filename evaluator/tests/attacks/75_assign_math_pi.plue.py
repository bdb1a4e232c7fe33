# attack: math.pi = 3 cross-evaluation poisoning of the math wrapper
# expect: forbidden

import math

math.pi = 3


def workflow(ctx):
    leaked = math.pi
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
