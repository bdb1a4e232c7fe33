# attack: '{0.__class__}'.ｆｏｒｍａｔ(1): fullwidth letters spelling the forbidden format attribute
# expect: forbidden

def workflow(ctx):
    leaked = "{0.__class__.__mro__}".ｆｏｒｍａｔ(1)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
