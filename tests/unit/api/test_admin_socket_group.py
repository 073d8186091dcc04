"""HIVE_ADMIN_GROUP: the admin socket belongs to the operators' group, or hive-c0re says why not."""

from __future__ import annotations

import grp
import os
import stat

import pytest

from api.admin_socket import AdminSocket, AdminSocketError
from hyperhive.settings import HiveSettings


async def test_the_socket_is_given_to_the_admin_group(tmp_path):
    group = grp.getgrnam("daemon")  # present on every Debian/NixOS system
    settings = HiveSettings(state_dir=tmp_path, admin_group=group.gr_name)
    admin = AdminSocket(object(), settings)  # type: ignore[arg-type]  # no request is made
    await admin.start()
    try:
        info = os.stat(settings.host_socket_path)
        assert info.st_gid == group.gr_gid
        assert stat.S_IMODE(info.st_mode) == 0o660
    finally:
        await admin.stop()
    assert not settings.host_socket_path.exists()


async def test_a_missing_admin_group_is_a_clear_error(tmp_path):
    settings = HiveSettings(state_dir=tmp_path, admin_group="no-such-hive-group")
    admin = AdminSocket(object(), settings)  # type: ignore[arg-type]
    with pytest.raises(AdminSocketError) as refused:
        await admin.start()
    assert "no-such-hive-group" in refused.value.what and "groupadd" in refused.value.hint
    assert not settings.host_socket_path.exists()
