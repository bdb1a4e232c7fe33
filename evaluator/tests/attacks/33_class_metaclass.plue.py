# attack: class X(metaclass=type(Plan)) to run code in a metaclass
# expect: forbidden

Meta = type(Plan)


class X(metaclass=Meta):
    pass


def workflow(ctx):
    leaked = X
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
