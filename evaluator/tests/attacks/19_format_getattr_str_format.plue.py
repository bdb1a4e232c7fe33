# attack: fetch str.format via getattr(str, 'for' + 'mat') and walk {0.__class__...}
# expect: forbidden

def workflow(ctx):
    fmt = getattr(str, "for" + "mat")
    leaked = fmt("{0.__class__.__base__.__subclasses__}", ())
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
