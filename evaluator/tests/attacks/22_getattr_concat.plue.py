# attack: getattr(ctx, '__cl' + 'ass__') with a concatenated attribute name
# expect: forbidden

def workflow(ctx):
    cls = getattr(ctx, "__cl" + "ass__")
    leaked = getattr(cls, "__in" + "it__")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
