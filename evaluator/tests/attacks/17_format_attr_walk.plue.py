# attack: '{0.__class__.__mro__}'.format(1) attribute walk inside a format string
# expect: forbidden

def workflow(ctx):
    leaked = "{0.__class__.__mro__[1].__subclasses__}".format(1)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
