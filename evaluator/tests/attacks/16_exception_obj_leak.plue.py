# attack: AttributeError.obj from a failed wrapper lookup, hoping it is the real json module (then .codecs.sys)
# expect: error

import json


def workflow(ctx):
    try:
        json.decoder
    except AttributeError as e:
        real_json = e.obj
        os_mod = real_json.codecs.sys.modules["os"]
        leaked = os_mod.environ.get("PLUE_ATTACK_CANARY")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
