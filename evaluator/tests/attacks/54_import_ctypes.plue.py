# attack: import ctypes and call libc system()
# expect: import

import ctypes


def workflow(ctx):
    leaked = ctypes.CDLL(None).system(b"touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
