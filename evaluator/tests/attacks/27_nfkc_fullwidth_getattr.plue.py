# attack: getattr((), '\uff3f\uff3fclass\uff3f\uff3f'): fullwidth low lines in a runtime string
# expect: forbidden

def workflow(ctx):
    cls = getattr((), "\uff3f\uff3fclass\uff3f\uff3f")
    leaked = getattr(cls, "\uff3f\uff3fbase\uff3f\uff3f")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
