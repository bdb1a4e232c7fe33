# attack: import random for nondeterministic plans
# expect: import

import random


def workflow(ctx):
    leaked = random.random()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
