# attack: from json import decoder: pull a submodule through an allowed package
# expect: import

from json import decoder


def workflow(ctx):
    leaked = decoder.re.enum.sys.modules["os"]
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
