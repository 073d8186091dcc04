"""The composition root: `hive up`, hive-c0re's start-up (`run_c0re`) and the `hive` CLI. The only
package that wires every other one together; nothing imports it."""
