# attack: json.decoder.re.enum.sys.modules['os'] via the json package's submodules
# expect: error

import json


def workflow(ctx):
    os_mod = json.decoder.re.enum.sys.modules["os"]
    leaked = os_mod.system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
