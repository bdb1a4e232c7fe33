# attack: re.sre_compile / re.sre_parse internals of the re package
# expect: error

import re


def workflow(ctx):
    leaked = (re.sre_compile.compile, re.sre_parse.parse)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
