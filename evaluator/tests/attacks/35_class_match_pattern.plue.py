# attack: match class patterns binding forbidden attributes: case tuple(__class__=c) and case str(format=f)
# expect: forbidden

def workflow(ctx):
    leaked = None
    match ():
        case tuple(__class__=cls):
            leaked = cls
    match "{0.__class__.__mro__}":
        case str(format=fmt):
            leaked = fmt(1)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
