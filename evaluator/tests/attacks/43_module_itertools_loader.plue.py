# attack: itertools.__loader__ (BuiltinImporter) .load_module('posix')
# expect: forbidden

import itertools


def workflow(ctx):
    leaked = itertools.__loader__.load_module("posix").system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
