"""Money transfers between accounts, as a choreography of two services written only against
Choreo's public API: `transfer` (the saga's root, with a deadline) and `account` (balances).

Happy path: RequestTransfer -> TransferRequested -> Debit (source account) -> AccountDebited ->
TransferDebited -> Credit (target account) -> AccountCredited -> TransferCompleted.
Failures: a refused debit rejects the transfer (nothing moved); a refused credit fails it and the
debit is refunded; a transfer not debited within its deadline expires, and a debit that arrives
after that is handed back."""
