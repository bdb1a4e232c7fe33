# attack: shlex.shlex(...).sourcehook('/etc/passwd') opens a file with the real open()
# expect: error

import shlex


def workflow(ctx):
    lexer = shlex.shlex("x")
    _, handle = lexer.sourcehook("/etc/passwd")
    leaked = handle.read()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
