# attack: augmented assignment to a module attribute: math.tau += 1 (AugAssign target, not Assign)
# expect: forbidden

import math


def workflow(ctx):
    math.tau += 1
    leaked = math.tau
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
