# attack: decorator returning fn.__code__ and reading co_consts
# expect: forbidden

def to_code(fn):
    return fn.__code__


@to_code
def payload():
    return "secret"


def workflow(ctx):
    leaked = payload.co_consts
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
