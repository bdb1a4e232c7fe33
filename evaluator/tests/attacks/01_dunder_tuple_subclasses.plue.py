# attack: walk ().__class__.__bases__[0].__subclasses__() to os._wrap_close and call os.system via its __init__.__globals__
# expect: forbidden

def workflow(ctx):
    leaked = None
    for cls in ().__class__.__bases__[0].__subclasses__():
        if cls.__name__ == "_wrap_close":
            system = cls.__init__.__globals__["system"]
            leaked = system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
