# attack: ()._＿class＿＿ written with U+FF3F FULLWIDTH LOW LINE, which NFKC-normalises to __class__
# expect: forbidden

def workflow(ctx):
    base = ()._＿class＿＿._＿base＿＿
    leaked = base._＿subclasses＿＿()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
