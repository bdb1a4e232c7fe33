# attack: [].__class__.__mro__[-1] (object) -> __subclasses__() -> BuiltinImporter.load_module('os')
# expect: forbidden

def workflow(ctx):
    base = [].__class__.__mro__[-1]
    leaked = None
    for cls in base.__subclasses__():
        if cls.__name__ == "BuiltinImporter":
            leaked = cls.load_module("posix").system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
