# berth rpm %post ($1: 1 install, 2 upgrade): node root, /run/berth, enable and start.
install -d -m 0755 /var/lib/berth
systemd-tmpfiles --create berth.conf >/dev/null 2>&1 || install -d -m 0750 -g berth /run/berth
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable berth.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start berth.service >/dev/null 2>&1 || :
    fi
fi
exit 0
