# attack: del json.loads / del Step.bash to break later evaluations
# expect: forbidden

import json


def workflow(ctx):
    del json.loads
    del Step.bash
    leaked = "deleted"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
