# attack: catastrophic regex backtracking: re.match('(a+)+$', 'a' * 40 + 'b')
# expect: timeout

import re


def workflow(ctx):
    subject = "a" * 40 + "b"
    matched = re.match("(a+)+$", subject)
    return Plan(
        name="regex-%s" % bool(matched),
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "true")],
    )
