# attack: invisible identifier ﾠ (U+FFA0 HALFWIDTH HANGUL FILLER) aliasing getattr, probing ().ﾠ and a fullwidth __class__
# expect: forbidden

ﾠ = getattr


def workflow(ctx):
    cls = ﾠ((), "\uff3f\uff3fclass\uff3f\uff3f")
    leaked = (cls, ().ﾠ)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
