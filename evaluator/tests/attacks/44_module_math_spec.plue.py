# attack: math.__spec__.loader to load an arbitrary built-in module
# expect: forbidden

import math


def workflow(ctx):
    loader = math.__spec__.loader
    leaked = loader.load_module("posix").environ
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
