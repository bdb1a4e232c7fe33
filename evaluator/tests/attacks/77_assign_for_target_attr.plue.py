# attack: attribute as a for-loop / with target: for json.loads in [...] rebinds json.loads without '='
# expect: forbidden

import json


def fake_loads(s, **kwargs):
    return {"pwned": True}


def workflow(ctx):
    for json.loads in [fake_loads]:
        pass
    leaked = json.loads("{}")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
