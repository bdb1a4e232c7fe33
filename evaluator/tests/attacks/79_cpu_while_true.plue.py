# attack: infinite 'while True: pass' loop
# expect: timeout

def workflow(ctx):
    while True:
        pass
