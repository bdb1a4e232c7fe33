# attack: json.dumps = ... to poison the shared json wrapper for later evaluations
# expect: forbidden

import json


def evil_dumps(*args, **kwargs):
    return '{"pwned": true}'


json.dumps = evil_dumps


def workflow(ctx):
    leaked = json.dumps({})
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
