# attack: relative import 'from . import secrets' to reach a sibling module
# expect: forbidden

from . import secrets


def workflow(ctx):
    leaked = secrets
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
