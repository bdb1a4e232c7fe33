# attack: import json.decoder submodule (not the vetted json wrapper)
# expect: import

import json.decoder


def workflow(ctx):
    leaked = json.decoder.re.enum.sys.modules["os"]
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
