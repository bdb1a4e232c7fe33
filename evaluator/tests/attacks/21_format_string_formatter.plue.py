# attack: string.Formatter().get_field() performs the same attribute walk as str.format without the .format attribute
# expect: error

import string


def workflow(ctx):
    formatter = string.Formatter()
    obj, _ = formatter.get_field("0.__class__.__base__.__subclasses__", ((),), {})
    leaked = obj()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
