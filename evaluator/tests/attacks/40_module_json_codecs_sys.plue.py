# attack: json.codecs.sys.modules['os'].environ to read the environment
# expect: error

import json


def workflow(ctx):
    leaked = json.codecs.sys.modules["os"].environ.get("PLUE_ATTACK_CANARY")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
