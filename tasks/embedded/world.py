"""A small fictional world shared by the embedded datasets: towns, people, organisations.

Fictional names keep the embedded tasks honest: the model cannot answer from pretraining memory, only from
the text in front of it (or, for fever, from the documents it retrieves).
"""

TOWNS = [
    "Brindlewick", "Asherford", "Caldmoor", "Dunmere", "Eastbrook", "Fenwick", "Glenhallow", "Harrowgate",
    "Ivelford", "Kestrel Point", "Larkspur", "Marrowdale", "Northcombe", "Oakhaven", "Pellham", "Quarrington",
    "Redcastle", "Saltmarsh", "Thornbury", "Upperwell", "Westmere", "Yarrowby", "Aldwick", "Bexhollow",
    "Cinderford", "Dovecote", "Elmstead", "Foxley", "Greywater", "Hollin Bay",
]
FIRST = [
    "Alice", "Ben", "Clara", "David", "Elena", "Frank", "Grace", "Henry", "Isla", "Jonah", "Karen", "Liam",
    "Maya", "Noah", "Olivia", "Peter", "Rosa", "Samuel", "Tara", "Victor", "Wendy", "Yusuf", "Zara", "Owen",
]
LAST = [
    "Ashby", "Barlow", "Crane", "Dawson", "Ellery", "Fairbanks", "Gable", "Hartley", "Ingram", "Jessop",
    "Kemble", "Lowell", "Mercer", "Norwood", "Oakley", "Pryce", "Quill", "Rowan", "Sutton", "Thorne",
    "Underhill", "Vance", "Whitlock", "Yates",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def person(rng) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"
