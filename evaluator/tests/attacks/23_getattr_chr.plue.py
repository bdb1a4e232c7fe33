# attack: getattr(x, chr(95)*2 + 'class' + chr(95)*2, None), hoping a default silences the refusal
# expect: forbidden

def workflow(ctx):
    u = chr(95) * 2
    cls = getattr((), u + "class" + u, None)
    base = getattr(cls, u + "base" + u, None)
    leaked = getattr(base, u + "subclasses" + u, None)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
