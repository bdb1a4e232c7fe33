# attack: string.Template.__init__.__globals__['_re'] to get the real re module and then sys
# expect: forbidden

import string


def workflow(ctx):
    real_re = string.Template.__init__.__globals__["_re"]
    leaked = real_re.enum.sys.modules["os"].environ.get("PLUE_ATTACK_CANARY")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
