# attack: import importlib and import_module('os')
# expect: import

import importlib


def workflow(ctx):
    leaked = importlib.import_module("os").system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
