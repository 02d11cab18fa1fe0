# berth rpm %postun ($1: 0 erase, 1 upgrade): restart the new agent after an upgrade (it
# takes the running task containers over); /var/lib/berth stays on erase, as rpm does.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart berth.service >/dev/null 2>&1 || :
    fi
fi
exit 0
