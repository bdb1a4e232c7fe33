# attack: max(itertools.count()): an infinite iterator consumed inside C code
# expect: timeout

import itertools


def workflow(ctx):
    biggest = max(itertools.count())
    return Plan(
        name="count-%d" % biggest,
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "true")],
    )
