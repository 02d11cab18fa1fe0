# berth rpm %pre: the socket's group.
getent group berth >/dev/null || groupadd -r berth
exit 0
