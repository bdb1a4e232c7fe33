# attack: busy loop that catches every exception (bare except + continue in finally) to survive a Python-level timeout
# expect: timeout

def workflow(ctx):
    while True:
        try:
            while True:
                pass
        except:
            pass
        finally:
            continue
