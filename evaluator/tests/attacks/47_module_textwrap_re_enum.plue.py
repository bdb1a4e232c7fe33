# attack: textwrap.re.enum.sys to reach sys.modules
# expect: error

import textwrap


def workflow(ctx):
    leaked = textwrap.re.enum.sys.modules["os"].getcwd()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
